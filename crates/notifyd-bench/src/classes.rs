//! Traffic classes (issue 11): the scenarios that measure the issue's figures F1–F5, each with a
//! fresh nats-server, logging mocks (one per provider, counting calls per second) and the release
//! daemon. One provider, `limited`, is held to `rate_per_second`/`burst`; a second, `unlimited`,
//! serves the numbers under `4915172` (F2 only).
//!
//! - **F1** a bulk backlog for `limited`, then urgent requests at a steady rate: urgent publish →
//!   `sent` p99, and the share of `limited`'s rate used while they arrive.
//! - **F2** the same backlog, then requests for `unlimited` at that rate: their p99.
//! - **F3** tenant `small`'s bulk requests alone, then queued behind tenant `big`'s bulk backlog:
//!   the ratio of the two completion times.
//! - **F4** two replicas draining a backlog: calls `limited` sees in every window after the first.
//! - **F5** the daemon's peak RSS with 0, 10k, 100k (and 1M) requests queued for `limited`.
//!
//! Requests state their class the way [`ClassVia`] says; on a build without classes (`auto` finds
//! no stream for `notify.sms.send.urgent`) every request goes to `notify.sms.send` as it is, so the
//! same command measures the build before the feature. Every request of a scenario belongs to one
//! tenant (`acme`) except in F3, so only class priority and per-provider queues, not tenant
//! fairness, can meet F1 and F2. `docs/benchmarks.md` has the commands.

use crate::daemon::{Daemon, DaemonSpec, Mode, ProviderSpec};
use crate::load;
use crate::mock::{Call, MockSmsc};
use crate::procs;
use crate::run::Options;
use async_nats::jetstream;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use notifyd_testkit::NatsServer;
use std::future::IntoFuture;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One of the issue's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Figure {
    F1,
    F2,
    F3,
    F4,
    F5,
}

impl Figure {
    pub const ALL: [Figure; 5] = [Figure::F1, Figure::F2, Figure::F3, Figure::F4, Figure::F5];

    pub fn as_str(self) -> &'static str {
        match self {
            Figure::F1 => "F1",
            Figure::F2 => "F2",
            Figure::F3 => "F3",
            Figure::F4 => "F4",
            Figure::F5 => "F5",
        }
    }

    /// `f1`..`f5` (any case).
    pub fn parse(s: &str) -> Option<Figure> {
        Figure::ALL.into_iter().find(|f| f.as_str().eq_ignore_ascii_case(s))
    }
}

/// How a request states its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassVia {
    /// `subject` when a stream captures `notify.sms.send.urgent`, else `none`.
    Auto,
    /// Published to `notify.sms.send.<class>`.
    Subject,
    /// Published to `notify.sms.send` with `"priority": "<class>"`.
    Field,
    /// Published to `notify.sms.send` as it is (the build before the feature).
    None,
}

impl ClassVia {
    pub fn parse(s: &str) -> Option<ClassVia> {
        Some(match s {
            "auto" => ClassVia::Auto,
            "subject" => ClassVia::Subject,
            "field" => ClassVia::Field,
            "none" => ClassVia::None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClassVia::Auto => "auto",
            ClassVia::Subject => "subject",
            ClassVia::Field => "field",
            ClassVia::None => "none",
        }
    }
}

/// The scenarios' sizes; the defaults are the issue's.
#[derive(Debug, Clone)]
pub struct Params {
    /// `limited`'s `rate_per_second` (default 100).
    pub provider_rate: f64,
    /// `limited`'s `burst` (default 10).
    pub burst: u32,
    /// Bulk requests queued for `limited` (F1, F2, F4; tenant `big`'s in F3). Default 100k.
    pub backlog: usize,
    /// Urgent (F1) and `unlimited` (F2) requests per second. Default 5.
    pub arrival_rate: f64,
    /// How long they arrive: F1's measuring window. Default 60 s.
    pub arrival_secs: f64,
    /// How long to wait for their `sent` after the last one is published (F1, F2, F3). Default 120 s.
    pub drain_secs: f64,
    /// Tenant `small`'s bulk requests (F3). Default 1000.
    pub small: usize,
    /// F4: how long the replicas drain, after the backlog is published. Default 60 s.
    pub f4_secs: f64,
    /// F4: the window calls are counted in. Default 10 s.
    pub f4_window_secs: f64,
    /// F5: the queued counts RSS is read at, ascending. Default 0, 10k, 100k.
    pub f5_levels: Vec<usize>,
    /// F5: the least wait after publishing a level before RSS is read. Default 5 s.
    pub f5_settle_secs: f64,
    pub class_via: ClassVia,
    /// Publish acks awaited at once when queueing a backlog. Default 4096.
    pub ack_window: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            provider_rate: 100.0,
            burst: 10,
            backlog: 100_000,
            arrival_rate: 5.0,
            arrival_secs: 60.0,
            drain_secs: 120.0,
            small: 1000,
            f4_secs: 60.0,
            f4_window_secs: 10.0,
            f5_levels: vec![0, 10_000, 100_000],
            f5_settle_secs: 5.0,
            class_via: ClassVia::Auto,
            ack_window: 4096,
        }
    }
}

/// The sizes, for the report's head.
pub fn describe(p: &Params) -> String {
    format!(
        "limited provider {}/s burst {}; backlog {}; arrivals {}/s for {} s, drain up to {} s; small tenant {}; \
         F4 {} s in {} s windows; F5 levels {:?}; class via {}",
        p.provider_rate,
        p.burst,
        p.backlog,
        p.arrival_rate,
        p.arrival_secs,
        p.drain_secs,
        p.small,
        p.f4_secs,
        p.f4_window_secs,
        p.f5_levels,
        p.class_via.as_str()
    )
}

/// A figure's judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A reading the target is judged on elsewhere (e.g. F3's alone time).
    Info,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: Figure,
    pub what: String,
    /// The measured value; `None`: not measured (e.g. not every request was sent in time).
    pub value: Option<f64>,
    /// The value as printed (with its unit, or `> x` when it was not reached).
    pub shown: String,
    pub target: String,
    pub verdict: Verdict,
}

/// What a scenario run gave: rows, and notes (class mode, warnings, stray events).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    /// Figures that could not be run, with why.
    pub errors: Vec<(Figure, String)>,
}

impl Report {
    /// The Markdown table: figure, what, value, target, result.
    pub fn table(&self) -> String {
        let mut s = String::from("| figure | what | value | target | result |\n|---|---|---:|---|---|\n");
        for r in &self.rows {
            let verdict = match r.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
                Verdict::Info => "-",
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {verdict} |\n",
                r.figure.as_str(),
                r.what,
                r.shown,
                r.target
            ));
        }
        for (f, e) in &self.errors {
            s.push_str(&format!("| {} | not run: {e} | | | ERROR |\n", f.as_str()));
        }
        s
    }

    /// Adds notes not already there.
    fn note(&mut self, notes: Vec<String>) {
        for n in notes {
            if !self.notes.contains(&n) {
                self.notes.push(n);
            }
        }
    }

    pub fn all_pass(&self) -> bool {
        self.errors.is_empty() && self.rows.iter().all(|r| r.verdict != Verdict::Fail)
    }
}

/// Runs `figures` in order, printing progress to stderr; a figure that cannot run is reported as
/// an error and the next one runs.
pub async fn run(opts: &Options, p: &Params, figures: &[Figure]) -> Report {
    let mut report = Report::default();
    for &f in figures {
        eprintln!("... {} ", f.as_str());
        let started = Instant::now();
        let result = match f {
            Figure::F1 => f1(opts, p, &mut report).await,
            Figure::F2 => f2(opts, p, &mut report).await,
            Figure::F3 => f3(opts, p, &mut report).await,
            Figure::F4 => f4(opts, p, &mut report).await,
            Figure::F5 => f5(opts, p, &mut report).await,
        };
        if let Err(e) = result {
            eprintln!("    {}: {e}", f.as_str());
            report.errors.push((f, e));
        }
        eprintln!("    {} took {:.0?}", f.as_str(), started.elapsed());
    }
    report
}

// ---------------------------------------------------------------------------------------------
// Requests and their events.

const TENANT: &str = "acme";
const LIMITED: &str = "limited";
const UNLIMITED: &str = "unlimited";
/// Numbers under it go to `unlimited`; every other number to `limited`.
const UNLIMITED_PREFIX: &str = "4915172";
const LIMITED_PREFIX: &str = "4915171";

/// One request: its index `g` (id `c<g>`, text `bench message no-<g>`), class, tenant and provider.
#[derive(Debug, Clone, Copy)]
struct Req {
    g: usize,
    class: &'static str,
    tenant: &'static str,
    unlimited: bool,
}

impl Req {
    fn new(g: usize, class: &'static str) -> Req {
        Req { g, class, tenant: TENANT, unlimited: false }
    }

    fn subject(&self, via: ClassVia) -> String {
        match via {
            ClassVia::Subject => format!("notify.sms.send.{}", self.class),
            _ => "notify.sms.send".into(),
        }
    }

    fn payload(&self, via: ClassVia) -> String {
        let prefix = if self.unlimited { UNLIMITED_PREFIX } else { LIMITED_PREFIX };
        let priority =
            if via == ClassVia::Field { format!(r#","priority":"{}""#, self.class) } else { String::new() };
        format!(
            r#"{{"id":"c{g}","to":["+{prefix}{n:06}"],"text":"bench message no-{g}","tags":{{"tenant":"{t}"}}{priority}}}"#,
            g = self.g,
            n = self.g % 1_000_000,
            t = self.tenant,
        )
    }
}

/// The request index of an event (`"id":"c<g>"`).
fn index_of(payload: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""id":"c"#;
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&payload[at..at + digits]).ok()?.parse().ok()
}

const UNSET: u64 = u64::MAX;
const FAILURES: [&str; 5] = ["rejected", "failed", "undelivered", "expired", "unknown"];

/// Per request: when it was published (or due, when paced) and when its `sent` event came, in
/// nanoseconds since `epoch`; fed by one core subscription to `notify.sms.status.>`.
struct Tracker {
    epoch: Instant,
    published: Vec<AtomicU64>,
    sent: Vec<AtomicU64>,
    failures: AtomicUsize,
    duplicates: AtomicUsize,
    publish_errors: AtomicUsize,
}

impl Tracker {
    fn new(n: usize, epoch: Instant) -> Tracker {
        Tracker {
            epoch,
            published: (0..n).map(|_| AtomicU64::new(UNSET)).collect(),
            sent: (0..n).map(|_| AtomicU64::new(UNSET)).collect(),
            failures: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            publish_errors: AtomicUsize::new(0),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn at(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    fn on_event(&self, subject: &str, payload: &[u8], now: Instant) {
        let status = subject.rsplit('.').next().unwrap_or("");
        if FAILURES.contains(&status) {
            if self.failures.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("    unexpected event on {subject}: {}", String::from_utf8_lossy(payload));
            }
            return;
        }
        if status != "sent" {
            return;
        }
        let Some(slot) = index_of(payload).and_then(|g| self.sent.get(g)) else { return };
        if slot.compare_exchange(UNSET, self.ns(now), Ordering::Relaxed, Ordering::Relaxed).is_err() {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sent_in(&self, range: Range<usize>) -> usize {
        self.sent[range].iter().filter(|s| s.load(Ordering::Relaxed) != UNSET).count()
    }

    /// Waits until every request of `range` is `sent`, or `deadline`; says whether they all are.
    async fn wait_sent(&self, range: Range<usize>, deadline: Instant) -> bool {
        loop {
            if self.sent_in(range.clone()) == range.len() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publish → `sent` latencies of `range`, sorted, in seconds; requests without `sent` are
    /// left out (see [`quantile`]).
    fn latencies(&self, range: Range<usize>) -> Vec<f64> {
        let mut v: Vec<f64> = range
            .filter_map(|g| {
                let (p, s) =
                    (self.published[g].load(Ordering::Relaxed), self.sent[g].load(Ordering::Relaxed));
                (p != UNSET && s != UNSET).then(|| s.saturating_sub(p) as f64 / 1e9)
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// First publish → last `sent` of `range`, seconds (`None` when one is not `sent`).
    fn span(&self, range: Range<usize>) -> Option<f64> {
        let first = range.clone().map(|g| self.published[g].load(Ordering::Relaxed)).min()?;
        let last = range.map(|g| self.sent[g].load(Ordering::Relaxed)).max()?;
        (last != UNSET && first != UNSET).then(|| last.saturating_sub(first) as f64 / 1e9)
    }
}

/// The value at quantile `q` of `total` samples of which `sorted` were measured and the rest are
/// larger than any (not `sent` in time): `None` when the quantile falls among the unmeasured.
fn quantile(sorted: &[f64], total: usize, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let i = ((total as f64 * q).ceil() as usize).clamp(1, total) - 1;
    sorted.get(i).copied()
}

// ---------------------------------------------------------------------------------------------
// One scenario's processes.

struct Env {
    /// Kept for its `Drop` (stops nats-server after the daemons).
    _nats: NatsServer,
    js: jetstream::Context,
    limited: MockSmsc,
    unlimited: Option<MockSmsc>,
    daemons: Vec<Daemon>,
    tracker: Arc<Tracker>,
    via: ClassVia,
    ack_window: usize,
}

impl Env {
    /// nats-server, the mock(s), `replicas` daemons and the event subscription, for requests
    /// `0..n`.
    async fn start(
        opts: &Options,
        p: &Params,
        replicas: usize,
        unlimited: bool,
        n: usize,
    ) -> Result<Env, String> {
        let nats = NatsServer::start();
        let limited = MockSmsc::start_logging(n);
        let unlimited = unlimited.then(|| MockSmsc::start_logging(n));
        let mut providers = vec![ProviderSpec {
            name: LIMITED.into(),
            url: limited.url(),
            rate_per_second: Some(p.provider_rate),
            burst: Some(p.burst),
            prefixes: vec![String::new()],
        }];
        if let Some(m) = &unlimited {
            providers.push(ProviderSpec {
                name: UNLIMITED.into(),
                url: m.url(),
                rate_per_second: None,
                burst: None,
                prefixes: vec![UNLIMITED_PREFIX.into()],
            });
        }
        let spec = DaemonSpec {
            binary: opts.notifyd.clone(),
            plugin: opts.plugin.clone(),
            nats_url: nats.url(),
            providers,
            mode: Mode::Jetstream,
            max_in_flight: opts.in_flight,
            wrapper: opts.wrapper.clone(),
            log_filter: opts.log_filter.clone(),
        };
        let mut daemons = Vec::new();
        for _ in 0..replicas.max(1) {
            daemons.push(Daemon::start(&spec)?);
        }
        let client = load::connect(&nats.url()).await?;
        let js = jetstream::new(client.clone());
        let via = match p.class_via {
            ClassVia::Auto if js.stream_by_subject("notify.sms.send.urgent").await.is_ok() => {
                ClassVia::Subject
            }
            ClassVia::Auto => ClassVia::None,
            v => v,
        };
        let tracker = Arc::new(Tracker::new(n, Instant::now()));
        let mut sub = client.subscribe("notify.sms.status.>").await.map_err(|e| e.to_string())?;
        client.flush().await.map_err(|e| e.to_string())?;
        let t = tracker.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                t.on_event(m.subject.as_str(), &m.payload, Instant::now());
            }
        });
        Ok(Env { _nats: nats, js, limited, unlimited, daemons, tracker, via, ack_window: p.ack_window })
    }

    /// Publishes `reqs` as fast as JetStream acks them, with at most `ack_window` acks
    /// outstanding; returns when every ack is in.
    async fn queue(&self, reqs: impl Iterator<Item = Req>) -> Result<(), String> {
        let mut acks = FuturesUnordered::new();
        for r in reqs {
            while acks.len() >= self.ack_window {
                self.on_ack(acks.next().await);
            }
            self.tracker.published[r.g].store(self.tracker.ns(Instant::now()), Ordering::Relaxed);
            acks.push(self.publish(r).await?.into_future());
        }
        while let Some(a) = acks.next().await {
            self.on_ack(Some(a));
        }
        self.check_publish_errors()
    }

    /// Publishes `reqs` at `rate` per second, request k due at k / rate after the first; its
    /// latency counts from when it was due. Returns the first one's due time.
    async fn pace(&self, reqs: impl Iterator<Item = Req>, rate: f64) -> Result<Instant, String> {
        let start = Instant::now();
        let mut acks = FuturesUnordered::new();
        for (k, r) in reqs.enumerate() {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                // Collect acks meanwhile, so they do not pile up.
                tokio::select! {
                    a = acks.next(), if !acks.is_empty() => self.on_ack(a),
                    _ = tokio::time::sleep(due - now) => {}
                }
            }
            self.tracker.published[r.g].store(self.tracker.ns(due), Ordering::Relaxed);
            acks.push(self.publish(r).await?.into_future());
        }
        while let Some(a) = acks.next().await {
            self.on_ack(Some(a));
        }
        self.check_publish_errors()?;
        Ok(start)
    }

    async fn publish(&self, r: Req) -> Result<jetstream::context::PublishAckFuture, String> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("c{}", r.g).as_str());
        self.js
            .publish_with_headers(r.subject(self.via), headers, r.payload(self.via).into())
            .await
            .map_err(|e| format!("cannot publish to {}: {e}", r.subject(self.via)))
    }

    fn on_ack(&self, ack: Option<Result<jetstream::publish::PublishAck, jetstream::context::PublishError>>) {
        if let Some(Err(e)) = ack {
            if self.tracker.publish_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("    publish not acknowledged: {e}");
            }
        }
    }

    fn check_publish_errors(&self) -> Result<(), String> {
        match self.tracker.publish_errors.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!("{n} publishes were not acknowledged (does a stream capture the subject?)")),
        }
    }

    /// Queues `n` bulk requests `from..from + n` for `limited` and says how fast.
    async fn queue_backlog(&self, from: usize, n: usize, tenant: &'static str) -> Result<(), String> {
        let t = Instant::now();
        self.queue((from..from + n).map(|g| Req { tenant, ..Req::new(g, "bulk") })).await?;
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "    queued {n} bulk requests (tenant {tenant}) in {s:.1} s ({:.0}/s)",
            n as f64 / s.max(1e-9)
        );
        Ok(())
    }

    /// Notes for the report: how classes were stated, and what went wrong on the way.
    fn notes(&self, figure: Figure) -> Vec<String> {
        let f = figure.as_str();
        let mut notes = vec![];
        notes.push(match self.via {
            ClassVia::None => "classes not stated (the build has no stream for notify.sms.send.urgent, or \
                               --class-via none): every request went to notify.sms.send as it is"
                .to_owned(),
            ClassVia::Subject => "classes stated by subject (notify.sms.send.<class>)".to_owned(),
            ClassVia::Field | ClassVia::Auto => "classes stated by the \"priority\" field".to_owned(),
        });
        let failures = self.tracker.failures.load(Ordering::Relaxed);
        let duplicates = self.tracker.duplicates.load(Ordering::Relaxed);
        if failures + duplicates > 0 {
            notes.push(format!("{f}: {failures} failure events, {duplicates} duplicate `sent` events"));
        }
        let (dups, problems) = self.daemon_problems();
        if dups > 0 {
            notes.push(format!("{f}: the mocks saw {dups} duplicate sends"));
        }
        if !problems.is_empty() {
            notes.push(format!("{f}: WARN/ERROR in the daemon log, e.g.: {problems}"));
        }
        notes
    }

    fn daemon_problems(&self) -> (u64, String) {
        let dups = [Some(&self.limited), self.unlimited.as_ref()]
            .into_iter()
            .flatten()
            .map(|m| m.counters.distinct_and_duplicates().1)
            .sum();
        let problems: Vec<String> = self
            .daemons
            .iter()
            .flat_map(|d| {
                d.log()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        let sample = problems.first().map_or(String::new(), |l| format!("{} lines; {l}", problems.len()));
        (dups, sample)
    }
}

fn secs(x: f64) -> String {
    if x < 10.0 { format!("{x:.3} s") } else { format!("{x:.1} s") }
}

/// A p99 row: `None` (not `sent` in time) reads `> wait`.
fn p99_row(figure: Figure, what: String, lat: &[f64], total: usize, waited: f64, target: f64) -> Row {
    let value = quantile(lat, total, 0.99);
    let shown = match value {
        Some(v) => secs(v),
        None => format!("> {} ({} of {total} not sent)", secs(waited), total - lat.len()),
    };
    let verdict = if value.is_some_and(|v| v <= target) { Verdict::Pass } else { Verdict::Fail };
    Row { figure, what, value, shown, target: format!("≤ {}", secs(target)), verdict }
}

// ---------------------------------------------------------------------------------------------
// The figures.

/// F1: a bulk backlog for `limited`, then urgent requests (same tenant) at `arrival_rate`.
async fn f1(opts: &Options, p: &Params, report: &mut Report) -> Result<(), String> {
    let arrivals = (p.arrival_rate * p.arrival_secs).round().max(1.0) as usize;
    let env = Env::start(opts, p, 1, false, p.backlog + arrivals).await?;
    env.queue_backlog(0, p.backlog, TENANT).await?;
    let urgent = p.backlog..p.backlog + arrivals;
    eprintln!("    {arrivals} urgent requests at {}/s", p.arrival_rate);
    let t0 = env.pace(urgent.clone().map(|g| Req::new(g, "urgent")), p.arrival_rate).await?;
    let window = Duration::from_secs_f64(arrivals as f64 / p.arrival_rate);
    env.tracker.wait_sent(urgent.clone(), t0 + window + Duration::from_secs_f64(p.drain_secs)).await;
    let lat = env.tracker.latencies(urgent.clone());
    let waited = (Instant::now() - t0).as_secs_f64();
    report.rows.push(p99_row(
        Figure::F1,
        "urgent publish → `sent` p99".into(),
        &lat,
        urgent.len(),
        waited,
        1.0,
    ));
    // The share counts while bulk requests wait: up to the end of the arrivals, or to the call
    // that took the last of the backlog when it was gone before (a backlog too small for the run).
    let calls = env.limited.calls();
    let times: Vec<Instant> = calls.iter().map(|c| c.at).collect();
    let (end, clipped) = match backlog_gone(&calls, p.backlog) {
        Some(gone) if gone < t0 + window => (gone, true),
        _ => (t0 + window, false),
    };
    let span = end.saturating_duration_since(t0).as_secs_f64();
    let in_window = count_between(&times, t0, end);
    let share = in_window as f64 / (span * p.provider_rate).max(1e-9);
    report.rows.push(Row {
        figure: Figure::F1,
        what: format!(
            "`limited`'s rate used while urgent arrive ({in_window} calls in {span:.1} s at {}/s{})",
            p.provider_rate,
            if clipped { ", until the backlog was gone" } else { "" }
        ),
        value: Some(share),
        shown: format!("{:.1}%", 100.0 * share),
        target: "≥ 95%".into(),
        verdict: if share >= 0.95 { Verdict::Pass } else { Verdict::Fail },
    });
    report.note(env.notes(Figure::F1));
    Ok(())
}

/// F2: the same backlog, then requests for `unlimited` (class normal, same tenant).
async fn f2(opts: &Options, p: &Params, report: &mut Report) -> Result<(), String> {
    let arrivals = (p.arrival_rate * p.arrival_secs).round().max(1.0) as usize;
    let env = Env::start(opts, p, 1, true, p.backlog + arrivals).await?;
    env.queue_backlog(0, p.backlog, TENANT).await?;
    let other = p.backlog..p.backlog + arrivals;
    eprintln!("    {arrivals} requests for `unlimited` at {}/s", p.arrival_rate);
    let reqs = other.clone().map(|g| Req { unlimited: true, ..Req::new(g, "normal") });
    let t0 = env.pace(reqs, p.arrival_rate).await?;
    let window = Duration::from_secs_f64(arrivals as f64 / p.arrival_rate);
    env.tracker.wait_sent(other.clone(), t0 + window + Duration::from_secs_f64(p.drain_secs)).await;
    let lat = env.tracker.latencies(other.clone());
    let waited = (Instant::now() - t0).as_secs_f64();
    report.rows.push(p99_row(
        Figure::F2,
        "`unlimited` publish → `sent` p99, behind `limited`'s backlog".into(),
        &lat,
        other.len(),
        waited,
        1.0,
    ));
    report.note(env.notes(Figure::F2));
    Ok(())
}

/// F3: tenant `small`'s bulk requests alone, then queued right after tenant `big`'s backlog.
async fn f3(opts: &Options, p: &Params, report: &mut Report) -> Result<(), String> {
    let alone = {
        let env = Env::start(opts, p, 1, false, p.small).await?;
        env.queue_backlog(0, p.small, "small").await?;
        env.tracker.wait_sent(0..p.small, Instant::now() + Duration::from_secs_f64(p.drain_secs)).await;
        report.note(env.notes(Figure::F3));
        env.tracker.span(0..p.small).ok_or("tenant small's requests alone were not all sent in time")?
    };
    report.rows.push(Row {
        figure: Figure::F3,
        what: format!("tenant small's {} bulk alone: first publish → last `sent`", p.small),
        value: Some(alone),
        shown: secs(alone),
        target: "-".into(),
        verdict: Verdict::Info,
    });
    // Twice: the small tenant publishing right after the big one's campaign (both wait in the
    // intake stream first, FIFO), and once the campaign has left the intake for the provider's
    // queues (a campaign that started earlier: the provider's fairness alone).
    for settled in [false, true] {
        let env = Env::start(opts, p, 1, false, p.backlog + p.small).await?;
        env.queue_backlog(0, p.backlog, "big").await?;
        if settled {
            let deadline = Instant::now() + Duration::from_secs(120);
            while pending(&env.js).await.is_some_and(|n| n > 0) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let small = p.backlog..p.backlog + p.small;
        env.queue_backlog(small.start, p.small, "small").await?;
        let t0 = env.tracker.at(env.tracker.published[small.start].load(Ordering::Relaxed));
        env.tracker.wait_sent(small.clone(), Instant::now() + Duration::from_secs_f64(p.drain_secs)).await;
        let mixed = env.tracker.span(small.clone());
        let when =
            if settled { "once the campaign is queued at the provider" } else { "published right after it" };
        let what = format!(
            "tenant small's {} bulk behind tenant big's {}, {when}: time / alone",
            p.small, p.backlog
        );
        // The target is the provider's fairness: the settled case. The other shows the intake's
        // FIFO on top (information).
        let judge = |ratio: f64| match (settled, ratio <= 2.2) {
            (false, _) => Verdict::Info,
            (true, true) => Verdict::Pass,
            (true, false) => Verdict::Fail,
        };
        let target = if settled { "≤ 2.20×" } else { "-" };
        report.rows.push(match mixed {
            Some(m) => Row {
                figure: Figure::F3,
                what: format!("{what} ({} / {})", secs(m), secs(alone)),
                value: Some(m / alone),
                shown: format!("{:.2}×", m / alone),
                target: target.into(),
                verdict: judge(m / alone),
            },
            None => {
                let waited = (Instant::now() - t0).as_secs_f64();
                Row {
                    figure: Figure::F3,
                    what: format!(
                        "{what} ({} of {} sent in {})",
                        env.tracker.sent_in(small),
                        p.small,
                        secs(waited)
                    ),
                    value: None,
                    shown: format!("> {:.2}×", waited / alone),
                    target: target.into(),
                    verdict: if settled { Verdict::Fail } else { Verdict::Info },
                }
            }
        });
        report.note(env.notes(Figure::F3));
    }
    Ok(())
}

/// F4: two replicas draining a backlog for `limited`; calls per window after the first.
async fn f4(opts: &Options, p: &Params, report: &mut Report) -> Result<(), String> {
    let env = Env::start(opts, p, 2, false, p.backlog).await?;
    env.queue_backlog(0, p.backlog, TENANT).await?;
    tokio::time::sleep(Duration::from_secs_f64(p.f4_secs)).await;
    let end = Instant::now();
    let calls: Vec<Instant> = env.limited.calls().iter().map(|c| c.at).collect();
    let window = Duration::from_secs_f64(p.f4_window_secs);
    let w = windows(&calls, window, end, p.backlog);
    let per = p.provider_rate * p.f4_window_secs;
    let (max_allowed, min_wanted) = (per * 1.05, per * 0.9);
    let label =
        |s: &str| format!("calls `limited` sees per {:.0} s window after the first, {s}", p.f4_window_secs);
    report.rows.push(match w.max {
        Some(max) => Row {
            figure: Figure::F4,
            what: label(&format!("most ({} windows, 2 replicas)", w.count)),
            value: Some(max as f64),
            shown: max.to_string(),
            target: format!("≤ {max_allowed:.0}"),
            verdict: if max as f64 <= max_allowed { Verdict::Pass } else { Verdict::Fail },
        },
        None => Row {
            figure: Figure::F4,
            what: label("most (no window: too short a run)"),
            value: None,
            shown: "-".into(),
            target: format!("≤ {max_allowed:.0}"),
            verdict: Verdict::Fail,
        },
    });
    report.rows.push(match w.min_backlogged {
        Some(min) => Row {
            figure: Figure::F4,
            what: label(&format!("fewest while a backlog exists ({} windows)", w.backlogged)),
            value: Some(min as f64),
            shown: min.to_string(),
            target: format!("≥ {min_wanted:.0}"),
            verdict: if min as f64 >= min_wanted { Verdict::Pass } else { Verdict::Fail },
        },
        None => Row {
            figure: Figure::F4,
            what: label("fewest while a backlog exists (none: backlog gone)"),
            value: None,
            shown: "-".into(),
            target: format!("≥ {min_wanted:.0}"),
            verdict: Verdict::Fail,
        },
    });
    report.note(env.notes(Figure::F4));
    Ok(())
}

/// F5: the daemon's RSS with each level of requests queued for `limited`.
async fn f5(opts: &Options, p: &Params, report: &mut Report) -> Result<(), String> {
    let mut levels = p.f5_levels.clone();
    levels.sort_unstable();
    levels.dedup();
    let top = levels.last().copied().unwrap_or(0);
    let env = Env::start(opts, p, 1, false, top).await?;
    let pid = env.daemons[0].pid();
    let mut queued = 0;
    let mut peaks: Vec<(usize, f64)> = Vec::new();
    for &level in &levels {
        if level > queued {
            env.queue_backlog(queued, level - queued, TENANT).await?;
            queued = level;
        }
        settle(&env.js, p).await;
        let (rss, hwm) = (procs::status_mib(pid, "VmRSS"), procs::status_mib(pid, "VmHWM"));
        eprintln!("    {level} queued: RSS {rss:.1} MiB, peak {hwm:.1} MiB");
        peaks.push((level, hwm));
        report.rows.push(Row {
            figure: Figure::F5,
            what: format!("daemon peak RSS with {level} queued (RSS now {rss:.1} MiB)"),
            value: Some(hwm),
            shown: format!("{hwm:.1} MiB"),
            target: "-".into(),
            verdict: Verdict::Info,
        });
    }
    if let [.., (before, a), (last, b)] = peaks[..] {
        let ratio = b / a;
        report.rows.push(Row {
            figure: Figure::F5,
            what: format!("flat: peak RSS at {last} queued / at {before}"),
            value: Some(ratio),
            shown: format!("{ratio:.2}×"),
            target: "≤ 1.25×".into(),
            verdict: if ratio <= 1.25 { Verdict::Pass } else { Verdict::Fail },
        });
    }
    report.note(env.notes(Figure::F5));
    Ok(())
}

/// Waits at least `f5_settle_secs`, then until the daemon takes requests from the intake stream
/// no faster than `limited` sends them (at most 10 minutes): by then a daemon that moves queued
/// requests elsewhere (the feature's provider queues) has moved them, and one that leaves them
/// in the intake stream holds only what is in flight.
async fn settle(js: &jetstream::Context, p: &Params) {
    tokio::time::sleep(Duration::from_secs_f64(p.f5_settle_secs)).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = pending(js).await;
    while let Some(before) = last {
        if before == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = pending(js).await;
        if now.is_none_or(|n| before.saturating_sub(n) as f64 <= 2.0 * p.provider_rate) {
            break;
        }
        last = now;
    }
}

/// Requests in the intake stream not yet delivered to the daemon's consumers (the plain one and,
/// on builds with traffic classes, one per class).
async fn pending(js: &jetstream::Context) -> Option<u64> {
    let stream = js.get_stream("NOTIFY_SMS").await.ok()?;
    let mut total = None;
    for name in ["notifyd", "notifyd_urgent", "notifyd_normal", "notifyd_bulk"] {
        if let Ok(info) = stream.consumer_info(name).await {
            total = Some(total.unwrap_or(0) + info.num_pending);
        }
    }
    total
}

/// When the provider took the last request of the backlog `0..backlog` (`None`: some of it waits).
fn backlog_gone(calls: &[Call], backlog: usize) -> Option<Instant> {
    let mut seen = vec![false; backlog];
    let mut taken = 0;
    for c in calls {
        if let Some(slot) = c.index.and_then(|i| seen.get_mut(i)) {
            if !std::mem::replace(slot, true) {
                taken += 1;
                if taken == backlog {
                    return Some(c.at);
                }
            }
        }
    }
    None
}

/// Calls in `[from, to)`; `calls` sorted.
fn count_between(calls: &[Instant], from: Instant, to: Instant) -> usize {
    calls.partition_point(|t| *t < to) - calls.partition_point(|t| *t < from)
}

/// F4's windows, sliding by a tenth of their length from the second window on (the first
/// starts at the first call), up to `end`.
#[derive(Debug, Default, PartialEq)]
struct Windows {
    count: usize,
    max: Option<usize>,
    /// Windows that ended before the provider had seen the whole backlog.
    backlogged: usize,
    min_backlogged: Option<usize>,
}

fn windows(calls: &[Instant], window: Duration, end: Instant, backlog: usize) -> Windows {
    let mut w = Windows::default();
    let Some(&first) = calls.first() else { return w };
    // The backlog exists until the provider has seen all of it.
    let drained = calls.get(backlog.saturating_sub(1)).copied().filter(|_| calls.len() >= backlog);
    let step = window / 10;
    let mut from = first + window;
    while from + window <= end {
        let n = count_between(calls, from, from + window);
        w.count += 1;
        w.max = w.max.max(Some(n));
        if drained.is_none_or(|d| from + window <= d) {
            w.backlogged += 1;
            w.min_backlogged = Some(w.min_backlogged.map_or(n, |m| m.min(n)));
        }
        from += step;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_state_the_class_as_asked_and_events_give_the_index_back() {
        let r = Req { unlimited: true, ..Req::new(42, "urgent") };
        assert_eq!(
            r.payload(ClassVia::Field),
            r#"{"id":"c42","to":["+4915172000042"],"text":"bench message no-42","tags":{"tenant":"acme"},"priority":"urgent"}"#
        );
        assert!(!r.payload(ClassVia::Subject).contains("priority"));
        assert_eq!(r.subject(ClassVia::Subject), "notify.sms.send.urgent");
        assert_eq!(r.subject(ClassVia::Field), "notify.sms.send");
        assert_eq!(r.subject(ClassVia::None), "notify.sms.send");
        assert_eq!(index_of(r.payload(ClassVia::None).as_bytes()), Some(42));
        assert_eq!(index_of(br#"{"id":"c7","to":"4915171000007","status":"sent"}"#), Some(7));
        assert_eq!(index_of(br#"{"id":"b7"}"#), None);
    }

    #[test]
    fn tracker_counts_sent_once_and_failures() {
        let t = Tracker::new(3, Instant::now());
        let now = t.epoch + Duration::from_secs(2);
        t.published[1].store(t.ns(t.epoch + Duration::from_secs(1)), Ordering::Relaxed);
        t.on_event("notify.sms.status.accepted", br#"{"id":"c1"}"#, now);
        assert_eq!(t.sent_in(0..3), 0, "only `sent` counts");
        t.on_event("notify.sms.status.sent", br#"{"id":"c1"}"#, now);
        t.on_event("notify.sms.status.sent", br#"{"id":"c1"}"#, now + Duration::from_secs(1));
        t.on_event("notify.sms.status.failed", br#"{"id":"c2"}"#, now);
        assert_eq!(t.sent_in(0..3), 1);
        assert_eq!(t.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(t.failures.load(Ordering::Relaxed), 1);
        assert_eq!(t.latencies(0..3), vec![1.0]);
        assert_eq!(t.span(1..2), Some(1.0));
        assert_eq!(t.span(0..2), None, "request 0 is not sent");
    }

    #[test]
    fn a_quantile_among_the_unsent_is_unknown() {
        let lat: Vec<f64> = (1..=99).map(f64::from).collect();
        assert_eq!(quantile(&lat, 100, 0.99), Some(99.0));
        assert_eq!(quantile(&lat, 100, 0.5), Some(50.0));
        assert_eq!(quantile(&lat[..98], 100, 0.99), None, "the 99th of 100 was not sent");
        assert_eq!(quantile(&[], 0, 0.99), None);
    }

    #[test]
    fn windows_skip_the_first_and_know_when_the_backlog_is_gone() {
        let t0 = Instant::now();
        // 10 calls a second for 30 s, evenly, then nothing for 5 s.
        let calls: Vec<Instant> = (0..300).map(|i| t0 + Duration::from_millis(100 * i)).collect();
        let end = t0 + Duration::from_secs(35);
        let w = windows(&calls, Duration::from_secs(10), end, 1_000_000);
        // Windows start at 10 s, 11 s, ... 25 s.
        assert_eq!(w.count, 16);
        assert_eq!(w.max, Some(100));
        assert_eq!((w.backlogged, w.min_backlogged), (16, Some(50)), "the last window holds 5 s of calls");
        // A backlog of 300 is gone at the last call (29.9 s): only windows ending before count.
        let w = windows(&calls, Duration::from_secs(10), end, 300);
        assert_eq!((w.backlogged, w.min_backlogged), (10, Some(100)));
        assert_eq!(windows(&calls, Duration::from_secs(10), t0 + Duration::from_secs(19), 300).count, 0);
    }

    #[test]
    fn the_backlog_is_gone_at_the_call_that_takes_its_last_request() {
        let t0 = Instant::now();
        let call = |ms, index| Call { at: t0 + Duration::from_millis(ms), index };
        let calls = [
            call(1, Some(0)),
            call(2, Some(5)),
            call(3, Some(0)),
            call(4, Some(1)),
            call(5, None),
            call(6, Some(2)),
        ];
        // Index 5 is not backlog; index 0 sent twice counts once.
        assert_eq!(backlog_gone(&calls, 2), Some(t0 + Duration::from_millis(4)));
        assert_eq!(backlog_gone(&calls, 3), Some(t0 + Duration::from_millis(6)));
        assert_eq!(backlog_gone(&calls, 4), None, "index 3 was never sent");
    }

    #[test]
    fn figures_parse_in_any_case() {
        assert_eq!(Figure::parse("f3"), Some(Figure::F3));
        assert_eq!(Figure::parse("F5"), Some(Figure::F5));
        assert_eq!(Figure::parse("f6"), None);
        assert_eq!(ClassVia::parse(ClassVia::Field.as_str()), Some(ClassVia::Field));
    }
}
