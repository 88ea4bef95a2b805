//! One measurement from start to end: a fresh nats-server (JetStream, temporary store, monitoring
//! port for `/varz`), the mock when HTTP is involved, the system under test (the daemon's replicas
//! or a ceiling worker), the load, and what the processes cost.

use crate::ceilings::Kind;
use crate::daemon::{Daemon, DaemonSpec, Mode, ProviderSpec, signal};
use crate::load::{self, LoadResult, LoadSpec};
use crate::mock::MockSmsc;
use crate::procs::{self, Usage, Varz, Watch};
use futures::TryStreamExt;
use notifyd_testkit::NatsServer;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Settings shared by every measurement of an invocation.
#[derive(Debug, Clone)]
pub struct Options {
    /// The daemon binary (`target/release/notifyd`).
    pub notifyd: PathBuf,
    /// The SMSC plugin (`target/release/libnotifyd_smsc.so`).
    pub plugin: PathBuf,
    /// This program, for the ceiling workers.
    pub self_exe: PathBuf,
    /// `[intake] max_in_flight` per replica, and the ceiling workers' concurrency.
    pub in_flight: usize,
    /// Closed loop: requests outstanding at most; default 2 × in_flight × replicas.
    pub window: Option<usize>,
    /// Give up after this long without any event.
    pub stall: Duration,
    /// Put before the daemon's command (e.g. `valgrind --tool=dhat`).
    pub wrapper: Vec<String>,
    /// Record the first daemon with `perf record -g` into this file.
    pub perf: Option<PathBuf>,
    /// `NOTIFYD_LOG` for the daemon.
    pub log_filter: String,
    /// nats-server's JetStream `sync_interval` (`always`, or a duration such as `10s`); `None`
    /// leaves the server's default (fsync every 2 minutes).
    pub nats_sync: Option<String>,
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Notifyd {
        mode: Mode,
        replicas: usize,
        /// Tracking entries outstanding (not due during the run) before the load starts.
        tracked: usize,
    },
    Ceiling(Kind),
    /// The contract bus ceiling plus notifyd's NATS operations beyond the contract.
    ContractAsNotifyd,
}

impl Target {
    pub fn label(&self) -> String {
        match self {
            Target::Notifyd { mode, replicas, tracked } => {
                let mode = if *mode == Mode::Jetstream { "jetstream" } else { "core" };
                match tracked {
                    0 => format!("notifyd {mode} x{replicas}"),
                    t => format!("notifyd {mode} x{replicas}, {}k tracked", t / 1000),
                }
            }
            Target::Ceiling(Kind::Bare) => "ceiling: bare bus".into(),
            Target::Ceiling(Kind::Contract) => "ceiling: contract bus".into(),
            Target::Ceiling(Kind::Http) => "ceiling: HTTP".into(),
            Target::ContractAsNotifyd => "contract + tracking entry".into(),
        }
    }
}

/// What the mock counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct MockCounts {
    pub requests: u64,
    pub sends: u64,
    pub refused: u64,
    pub connections: u64,
    pub max_open: usize,
    pub distinct: u64,
    pub duplicates: u64,
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub target: Target,
    pub n: usize,
    pub rate: Option<f64>,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Requests without a `sent` event (or failed HTTP exchanges).
    pub lost: usize,
    pub failures: usize,
    pub duplicate_events: usize,
    /// Processes under test: CPU seconds summed, peak RSS the largest.
    pub sut: Usage,
    pub nats: Usage,
    /// The harness itself (load generator and mock).
    pub bench_cpu_s: f64,
    /// CPU seconds of every other process on the machine meanwhile (other work disturbs the figures).
    pub other_cpu_s: f64,
    /// Wall time of the measurement (first publish → last `sent`), seconds.
    pub wall_s: f64,
    pub varz: Varz,
    pub mock: Option<MockCounts>,
    /// `sent` events stored in the status stream at the end (notifyd and the contract ceiling).
    pub stored_sent: Option<u64>,
    /// WARN/ERROR lines in the daemon logs.
    pub log_problems: usize,
    pub log_sample: String,
    /// nats-server's JetStream sync setting as its `/varz` reports it: `always`, or the interval.
    pub nats_sync: String,
    /// notifyd: seconds from the first publish until the intake stream was empty and every `sent`
    /// event stored (`None`: not within a minute of the last `sent`). Subscribers see an event
    /// before its stream has stored it, so with a slow store (`sync_interval: always`) the work
    /// ends later than the last `sent` seen.
    pub settled_s: Option<f64>,
    /// What JetStream holds at the end (notifyd only): each stream's messages and bytes, and the
    /// store directory's size on disk.
    pub store: Option<Store>,
}

/// What the JetStream store holds at the end of a measurement.
#[derive(Debug, Clone, Default)]
pub struct Store {
    /// Each stream (buckets are the streams `KV_<bucket>`): name, messages, bytes (`/jsz`).
    pub streams: Vec<(String, u64, u64)>,
    /// The files under the store directory: their lengths summed, and the blocks they occupy.
    pub disk_bytes: u64,
    pub disk_allocated: u64,
}

impl Measurement {
    /// The target, and the sync setting when it is not nats-server's default.
    pub fn label(&self) -> String {
        match self.nats_sync.as_str() {
            "" | DEFAULT_SYNC => self.target.label(),
            sync => format!("{}, sync {sync}", self.target.label()),
        }
    }

    /// CPU seconds per 10k requests.
    pub fn per_10k(&self, cpu_s: f64) -> f64 {
        cpu_s / self.n.max(1) as f64 * 10_000.0
    }

    fn target_is_notifyd(&self) -> bool {
        matches!(self.target, Target::Notifyd { .. })
    }

    /// Requests per second until the work settled ([`Measurement::settled_s`]); 0 when it did not.
    pub fn settled_throughput(&self) -> f64 {
        self.settled_s.filter(|t| *t > 0.0).map_or(0.0, |t| self.n as f64 / t)
    }

    /// Cores used by other processes during the measurement.
    pub fn other_load(&self) -> f64 {
        if self.wall_s > 0.0 { self.other_cpu_s / self.wall_s } else { 0.0 }
    }

    pub fn complete(&self) -> bool {
        self.lost == 0 && self.failures == 0
    }
}

/// nats-server's default `sync_interval`, spelled as a measurement reports it (`Nats::sync_setting`).
pub const DEFAULT_SYNC: &str = "2m";

/// A fresh nats-server for one measurement, with its monitoring port.
struct Nats {
    server: NatsServer,
    monitor: u16,
    pid: u32,
    /// Holds the config file with the `sync_interval` (`-c`), if one was asked for.
    _conf: Option<tempfile::TempDir>,
}

impl Nats {
    /// Starts the server; with `opts.nats_sync`, from a config file that sets only
    /// `jetstream { sync_interval: … }` (the command line's `-js -sd …` add the rest).
    fn start(opts: &Options) -> Result<Nats, String> {
        let monitor =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let mut args = vec!["-m".to_owned(), monitor.to_string()];
        let conf = match &opts.nats_sync {
            Some(sync) => {
                let dir = tempfile::Builder::new()
                    .prefix("notifyd-bench-nats-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
                let file = dir.path().join("sync.conf");
                std::fs::write(&file, format!("jetstream {{ sync_interval: {sync:?} }}\n"))
                    .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
                args.extend(["-c".to_owned(), file.to_string_lossy().into_owned()]);
                Some(dir)
            }
            None => None,
        };
        let server = NatsServer::builder().args(args).start();
        let pid = procs::find_pid(server.store_dir()).unwrap_or(0);
        Ok(Nats { server, monitor, pid, _conf: conf })
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// `always`, or the interval (`2m`, `10s`, `100ms`), as `/varz` reports it.
    fn sync_setting(&self) -> String {
        let Some((200, body)) = procs::http_get(self.monitor, "/varz") else { return "?".into() };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let config = &v["jetstream"]["config"];
        if config["sync_always"].as_bool() == Some(true) {
            return "always".into();
        }
        match config["sync_interval"].as_u64() {
            Some(ns) if ns % 60_000_000_000 == 0 => format!("{}m", ns / 60_000_000_000),
            Some(ns) if ns % 1_000_000_000 == 0 => format!("{}s", ns / 1_000_000_000),
            Some(ns) => format!("{}ms", ns / 1_000_000),
            None => "?".into(),
        }
    }

    /// Each stream's messages and bytes (`/jsz`), and the store directory's size on disk.
    fn store(&self) -> Store {
        let mut store = Store::default();
        if let Some((200, body)) = procs::http_get(self.monitor, "/jsz?accounts=true&streams=true") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            for account in v["account_details"].as_array().into_iter().flatten() {
                for s in account["stream_detail"].as_array().into_iter().flatten() {
                    let name = s["name"].as_str().unwrap_or("?").to_owned();
                    let state = &s["state"];
                    store.streams.push((
                        name,
                        state["messages"].as_u64().unwrap_or(0),
                        state["bytes"].as_u64().unwrap_or(0),
                    ));
                }
            }
        }
        store.streams.sort();
        (store.disk_bytes, store.disk_allocated) = procs::disk_usage(self.server.store_dir());
        store
    }
}

/// Publishes `count` tracking entries of messages sent just now (the daemon's first poll is an
/// hour away), so the daemon starts with that many tracked messages outstanding.
async fn prefill_tracking(url: &str, count: usize) -> Result<(), String> {
    let client = load::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = crate::ceilings::tracking_queue(&js).await?;
    let now = notifyd::track::now_unix_ms();
    let mut acks = Vec::with_capacity(1000);
    for i in 0..count {
        let to = format!("4915172{i:07}");
        let entry = notifyd::track::Entry {
            id: format!("tracked-{i}"),
            reference: format!("{i}:{to}"),
            to,
            provider: "smsc".into(),
            provider_message_id: i.to_string(),
            segments: 1,
            encoding: "gsm7".into(),
            attempt: 1,
            sent_at_ms: now,
            tags: None,
        };
        let ack = js
            .publish("notify.sms.track", notifyd::track::encode(&entry))
            .await
            .map_err(|e| format!("cannot publish a tracking entry: {e}"))?;
        acks.push(ack);
        if acks.len() == 1000 || i + 1 == count {
            for ack in acks.drain(..) {
                ack.await.map_err(|e| format!("a tracking entry was not stored: {e}"))?;
            }
        }
    }
    let stored = stream.info().await.map_err(|e| e.to_string())?.state.messages;
    if stored != count as u64 {
        return Err(format!("{stored} tracking entries stored, {count} published"));
    }
    println!("                           {count} tracking entries outstanding before the load");
    Ok(())
}

/// A ceiling worker process (`notifyd-bench worker <kind> ...`), once it said `ready`.
struct Worker {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Worker {
    fn start(opts: &Options, kind: Kind, args: &[String]) -> Result<Worker, String> {
        let mut child = Command::new(&opts.self_exe)
            .arg("worker")
            .arg(kind.as_str())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", opts.self_exe.display()))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(format!("the {} worker did not start: {line:?}", kind.as_str()));
        }
        Ok(Worker { child, out })
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        let _ = self.out.read_line(&mut line);
        line
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench_cpu() -> f64 {
    procs::cpu_seconds(std::process::id())
}

/// Waits until the intake stream is empty (JetStream intake) and `n` `sent` events are stored:
/// the seconds since the load's first publish, `loaded` before now; `None` after a minute.
async fn settle(
    client: &async_nats::Client,
    jetstream_intake: bool,
    n: usize,
    loaded: Duration,
) -> Option<f64> {
    let js = async_nats::jetstream::new(client.clone());
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let intake_empty = !jetstream_intake
            || match js.get_stream("NOTIFY_SMS").await {
                Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages == 0),
                Err(_) => false,
            };
        if intake_empty && stored_sent(client).await == Some(n as u64) {
            return Some((loaded + start.elapsed()).as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn stored_sent(client: &async_nats::Client) -> Option<u64> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("NOTIFY_SMS_STATUS").await.ok()?;
    let mut subjects = stream.info_with_subjects("notify.sms.status.sent").await.ok()?;
    let mut total = 0;
    while let Ok(Some((_, count))) = subjects.try_next().await {
        total += count as u64;
    }
    Some(total)
}

fn load_spec(opts: &Options, n: usize, rate: Option<f64>, jetstream: bool, replicas: usize) -> LoadSpec {
    LoadSpec {
        n,
        subject: "notify.sms.send".into(),
        jetstream,
        sent_subject: "notify.sms.status.sent".into(),
        failure_subjects: ["rejected", "failed", "undelivered", "expired", "unknown"]
            .iter()
            .map(|s| format!("notify.sms.status.{s}"))
            .collect(),
        rate,
        window: opts.window.unwrap_or(2 * opts.in_flight * replicas.max(1)),
        stall: opts.stall,
    }
}

fn from_load(target: Target, rate: Option<f64>, r: &LoadResult) -> Measurement {
    Measurement {
        target,
        n: r.n,
        rate,
        throughput: r.throughput(),
        p50_ms: r.quantile_ms(0.5),
        p99_ms: r.quantile_ms(0.99),
        p999_ms: r.quantile_ms(0.999),
        max_ms: r.quantile_ms(1.0),
        lost: r.lost(),
        failures: r.failures + r.publish_errors,
        duplicate_events: r.duplicate_events,
        sut: Usage { cpu_s: 0.0, hwm_mib: 0.0 },
        nats: Usage { cpu_s: 0.0, hwm_mib: 0.0 },
        bench_cpu_s: 0.0,
        other_cpu_s: 0.0,
        wall_s: r.elapsed.as_secs_f64(),
        varz: Varz::default(),
        mock: None,
        stored_sent: None,
        log_problems: 0,
        log_sample: String::new(),
        nats_sync: String::new(),
        settled_s: None,
        store: None,
    }
}

fn mock_counts(mock: &MockSmsc) -> MockCounts {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &mock.counters;
    let (distinct, duplicates) = c.distinct_and_duplicates();
    MockCounts {
        requests: c.requests.load(Relaxed),
        sends: c.phones.load(Relaxed),
        refused: c.refused.load(Relaxed),
        connections: c.connections.load(Relaxed),
        max_open: c.max_open.load(Relaxed),
        distinct,
        duplicates,
    }
}

/// Measures `target` with `n` requests (closed loop, or open loop at `rate`).
pub async fn measure(
    opts: &Options,
    target: Target,
    n: usize,
    rate: Option<f64>,
) -> Result<Measurement, String> {
    match target {
        Target::Notifyd { mode, replicas, tracked } => {
            measure_notifyd(opts, mode, replicas, tracked, n, rate).await
        }
        Target::Ceiling(Kind::Http) => measure_http(opts, n).await,
        Target::Ceiling(kind) => measure_bus(opts, kind, false, n, rate).await,
        Target::ContractAsNotifyd => measure_bus(opts, Kind::Contract, true, n, rate).await,
    }
}

async fn measure_notifyd(
    opts: &Options,
    mode: Mode,
    replicas: usize,
    tracked: usize,
    n: usize,
    rate: Option<f64>,
) -> Result<Measurement, String> {
    let target = Target::Notifyd { mode, replicas, tracked };
    let nats = Nats::start(opts)?;
    let (monitor, nats_pid) = (nats.monitor, nats.pid);
    if tracked > 0 {
        prefill_tracking(&nats.url(), tracked).await?;
    }
    let mock = MockSmsc::start(n);
    let spec = DaemonSpec {
        binary: opts.notifyd.clone(),
        plugin: opts.plugin.clone(),
        nats_url: nats.url(),
        providers: vec![ProviderSpec::smsc(mock.url())],
        mode,
        max_in_flight: opts.in_flight,
        wrapper: opts.wrapper.clone(),
        log_filter: opts.log_filter.clone(),
    };
    let mut daemons = Vec::new();
    for _ in 0..replicas.max(1) {
        daemons.push(Daemon::start(&spec)?);
    }
    let client = load::connect(&nats.url()).await?;
    let perf = match &opts.perf {
        Some(file) => Some(
            Command::new("perf")
                .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o"])
                .arg(file)
                .args(["-p", &daemons[0].pid().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run perf: {e}"))?,
        ),
        None => None,
    };
    let watches: Vec<Watch> = daemons.iter().map(|d| Watch::start(d.pid())).collect();
    let nats_watch = Watch::start(nats_pid);
    let bench0 = bench_cpu();
    let busy0 = procs::machine_busy_seconds();
    let varz0 = Varz::read(monitor);
    let spec = load_spec(opts, n, rate, mode == Mode::Jetstream, replicas);
    let r = load::run(&client, &spec).await?;
    let varz = Varz::read(monitor).since(varz0);
    let bench_cpu_s = bench_cpu() - bench0;
    let busy = procs::machine_busy_seconds() - busy0;
    let usages: Vec<Usage> = watches.iter().map(Watch::stop).collect();
    let nats_usage = nats_watch.stop();
    if let Some(mut p) = perf {
        signal(p.id(), "INT");
        let _ = p.wait();
    }
    let mut m = from_load(target, rate, &r);
    m.sut = Usage {
        cpu_s: usages.iter().map(|u| u.cpu_s).sum(),
        hwm_mib: usages.iter().map(|u| u.hwm_mib).fold(0.0, f64::max),
    };
    m.nats = nats_usage;
    m.bench_cpu_s = bench_cpu_s;
    m.other_cpu_s = (busy - m.sut.cpu_s - m.nats.cpu_s - bench_cpu_s).max(0.0);
    m.varz = varz;
    m.settled_s = settle(&client, mode == Mode::Jetstream, n, r.elapsed).await;
    m.stored_sent = stored_sent(&client).await;
    m.mock = Some(mock_counts(&mock));
    for d in &mut daemons {
        d.stop(Duration::from_secs(15));
        let log = d.log();
        let problems: Vec<&str> = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        m.log_problems += problems.len();
        if m.log_sample.is_empty() {
            m.log_sample = problems.iter().take(3).copied().collect::<Vec<_>>().join("\n");
        }
    }
    m.nats_sync = nats.sync_setting();
    // Read after the daemons stopped, so that nothing is in flight.
    m.store = Some(nats.store());
    drop(nats);
    Ok(m)
}

async fn measure_bus(
    opts: &Options,
    kind: Kind,
    as_notifyd: bool,
    n: usize,
    rate: Option<f64>,
) -> Result<Measurement, String> {
    let nats = Nats::start(opts)?;
    let (monitor, nats_pid) = (nats.monitor, nats.pid);
    let mut args = vec!["--nats".into(), nats.url(), "--in-flight".into(), opts.in_flight.to_string()];
    if as_notifyd {
        args.push("--as-notifyd".into());
    }
    let worker = Worker::start(opts, kind, &args)?;
    let client = load::connect(&nats.url()).await?;
    let watch = Watch::start(worker.child.id());
    let nats_watch = Watch::start(nats_pid);
    let bench0 = bench_cpu();
    let busy0 = procs::machine_busy_seconds();
    let varz0 = Varz::read(monitor);
    let r = load::run(&client, &load_spec(opts, n, rate, true, 1)).await?;
    let varz = Varz::read(monitor).since(varz0);
    let busy = procs::machine_busy_seconds() - busy0;
    let target = if as_notifyd { Target::ContractAsNotifyd } else { Target::Ceiling(kind) };
    let mut m = from_load(target, rate, &r);
    m.bench_cpu_s = bench_cpu() - bench0;
    m.sut = watch.stop();
    m.nats = nats_watch.stop();
    m.varz = varz;
    m.other_cpu_s = (busy - m.sut.cpu_s - m.nats.cpu_s - m.bench_cpu_s).max(0.0);
    if kind == Kind::Contract {
        m.stored_sent = stored_sent(&client).await;
    }
    m.nats_sync = nats.sync_setting();
    drop(worker);
    drop(nats);
    Ok(m)
}

async fn measure_http(opts: &Options, n: usize) -> Result<Measurement, String> {
    let mock = MockSmsc::start(n);
    let mut worker = Worker::start(
        opts,
        Kind::Http,
        &[
            "--url".into(),
            mock.url(),
            "--n".into(),
            n.to_string(),
            "--in-flight".into(),
            opts.in_flight.to_string(),
        ],
    )?;
    let watch = Watch::start(worker.child.id());
    let bench0 = bench_cpu();
    let busy0 = procs::machine_busy_seconds();
    let line = worker.read_line();
    let usage = watch.stop();
    let bench_cpu_s = bench_cpu() - bench0;
    let busy = procs::machine_busy_seconds() - busy0;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("the HTTP worker answered {line:?}: {e}"))?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let ok = v["ok"].as_u64().unwrap_or(0) as usize;
    Ok(Measurement {
        target: Target::Ceiling(Kind::Http),
        n,
        rate: None,
        throughput: ok as f64 / f("elapsed_s"),
        p50_ms: f("p50_ms"),
        p99_ms: f("p99_ms"),
        p999_ms: f("p999_ms"),
        max_ms: f("max_ms"),
        lost: n.saturating_sub(ok),
        failures: v["errors"].as_u64().unwrap_or(0) as usize,
        duplicate_events: 0,
        sut: usage,
        nats: Usage { cpu_s: 0.0, hwm_mib: 0.0 },
        bench_cpu_s,
        other_cpu_s: (busy - usage.cpu_s - bench_cpu_s).max(0.0),
        wall_s: f("elapsed_s"),
        varz: Varz::default(),
        mock: Some(mock_counts(&mock)),
        stored_sent: None,
        log_problems: 0,
        log_sample: String::new(),
        nats_sync: String::new(),
        settled_s: None,
        store: None,
    })
}

/// One line per measurement, for the terminal.
pub fn describe(m: &Measurement) -> String {
    let mut s = format!(
        "{:<26} n={:<8} {:>9.0} msg/s  p50 {:>8.2} ms  p99 {:>8.2} ms  p999 {:>8.2} ms  max {:>8.2} ms  \
         RSS {:>6.1} MiB  CPU {:>5.2} s/10k  nats CPU {:>5.2} s/10k  bench CPU {:>5.2} s/10k",
        m.label(),
        m.n,
        m.throughput,
        m.p50_ms,
        m.p99_ms,
        m.p999_ms,
        m.max_ms,
        m.sut.hwm_mib,
        m.per_10k(m.sut.cpu_s),
        m.per_10k(m.nats.cpu_s),
        m.per_10k(m.bench_cpu_s),
    );
    if let Some(rate) = m.rate {
        s.push_str(&format!("  (open loop at {rate:.0}/s)"));
    }
    s.push_str(&format!(
        "\n{:<26} {:.1} s; nats-server peak RSS {:.0} MiB; other processes used {:.2} cores meanwhile",
        "",
        m.wall_s,
        m.nats.hwm_mib,
        m.other_load()
    ));
    if m.varz.in_msgs > 0.0 {
        let n = m.n.max(1) as f64;
        s.push_str(&format!(
            "\n{:<26} NATS per request: {:.2} msgs in, {:.2} msgs out, {:.0} B in, {:.0} B out",
            "",
            m.varz.in_msgs / n,
            m.varz.out_msgs / n,
            m.varz.in_bytes / n,
            m.varz.out_bytes / n
        ));
    }
    if let Some(c) = m.mock {
        s.push_str(&format!(
            "\n{:<26} mock: {} requests, {} sends ({} distinct, {} duplicate), {} refused, {} connections (max {} open)",
            "", c.requests, c.sends, c.distinct, c.duplicates, c.refused, c.connections, c.max_open
        ));
    }
    if let Some(stored) = m.stored_sent {
        s.push_str(&format!("\n{:<26} `sent` events stored in NOTIFY_SMS_STATUS: {stored}", ""));
    }
    if !m.complete() || m.duplicate_events > 0 {
        s.push_str(&format!(
            "\n{:<26} INCOMPLETE: {} without `sent`, {} failures, {} duplicate events",
            "", m.lost, m.failures, m.duplicate_events
        ));
    }
    if m.target_is_notifyd() {
        s.push_str(&match m.settled_s {
            Some(t) => format!(
                "\n{:<26} settled (intake empty, every `sent` stored) {t:.1} s after the first publish: {:.0} msg/s",
                "",
                m.settled_throughput()
            ),
            None => format!("\n{:<26} NOT settled within a minute of the last `sent`", ""),
        });
    }
    if let Some(store) = &m.store {
        s.push_str(&store_lines(store, m.n));
    }
    if m.log_problems > 0 {
        s.push_str(&format!("\n{:<26} {} WARN/ERROR log lines, e.g.:\n{}", "", m.log_problems, m.log_sample));
    }
    s
}

/// What the store holds, per stream and per request (the sizing figures of docs/operators.md).
fn store_lines(store: &Store, n: usize) -> String {
    let n = n.max(1) as f64;
    let mut s = String::new();
    let (mut messages, mut bytes) = (0, 0);
    for (name, msgs, b) in &store.streams {
        if *msgs == 0 {
            continue;
        }
        messages += msgs;
        bytes += b;
        s.push_str(&format!(
            "\n{:<26} store: {name:<24} {msgs:>9} msgs {b:>12} B = {:>6.1} msgs, {:>7.0} B per request",
            "",
            *msgs as f64 / n,
            *b as f64 / n
        ));
    }
    s.push_str(&format!(
        "\n{:<26} store: all streams {messages} msgs {bytes} B ({:.0} B per request); store dir on disk {} B \
         ({:.0} B per request), {} B allocated",
        "",
        bytes as f64 / n,
        store.disk_bytes,
        store.disk_bytes as f64 / n,
        store.disk_allocated
    ));
    s
}

/// The Markdown table of measurements.
pub fn table(ms: &[Measurement]) -> String {
    let mut s = String::from(
        "| run | N | rate | msgs/s | p50 ms | p99 ms | p999 ms | peak RSS MiB | CPU s/10k | nats-server CPU s/10k | NATS msgs in/out per req | lost | other load |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in ms {
        let n = m.n.max(1) as f64;
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {} | {} | {} | {:.2} |\n",
            m.label(),
            m.n,
            m.rate.map_or("max".to_owned(), |r| format!("{r:.0}/s")),
            m.throughput,
            m.p50_ms,
            m.p99_ms,
            m.p999_ms,
            m.sut.hwm_mib,
            m.per_10k(m.sut.cpu_s),
            if m.nats.cpu_s > 0.0 { format!("{:.2}", m.per_10k(m.nats.cpu_s)) } else { "-".into() },
            if m.varz.in_msgs > 0.0 {
                format!("{:.1} / {:.1}", m.varz.in_msgs / n, m.varz.out_msgs / n)
            } else {
                "-".into()
            },
            m.lost,
            m.other_load(),
        ));
    }
    s
}
