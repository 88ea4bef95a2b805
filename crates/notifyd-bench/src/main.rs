//! `notifyd-bench`: measures the release daemon against its ceilings. See `docs/benchmarks.md`.
//!
//! ```sh
//! cargo run --release -p notifyd-bench -- --n 100000                  # JetStream, 1 replica, + ceilings
//! cargo run --release -p notifyd-bench -- --n 100000 --replicas 2
//! cargo run --release -p notifyd-bench -- --n 100000 --mode core
//! cargo run --release -p notifyd-bench -- --n 50000 --rate 5000        # open loop, for latency
//! cargo run --release -p notifyd-bench -- --n 30000 --sync-pairs 4   # default sync_interval vs `always`
//! cargo run --release -p notifyd-bench -- --suite quick                # 10k and 100k matrix
//! cargo run --release -p notifyd-bench -- --suite full                 # + 1M
//! cargo run --release -p notifyd-bench -- classes --all                # traffic classes, F1-F5
//! cargo run --release -p notifyd-bench -- classes --figure f1 --backlog 5000
//! ```
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand, ValueEnum};
use notifyd_bench::ceilings::{self, Kind};
use notifyd_bench::classes::{self, ClassVia, Figure, Params};
use notifyd_bench::daemon::Mode;
use notifyd_bench::run::{Options, Target};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "notifyd-bench",
    about = "Benchmark notifyd: throughput, latency, memory and CPU against the bus and HTTP ceilings"
)]
struct Cli {
    /// Requests per measurement.
    #[arg(long, default_value_t = 10_000)]
    n: usize,
    /// Intake mode of the daemon.
    #[arg(long, value_enum, default_value_t = CliMode::Jetstream)]
    mode: CliMode,
    /// Daemon replicas sharing the intake.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Open loop at this many requests per second (default: closed loop, as fast as it goes).
    #[arg(long)]
    rate: Option<f64>,
    /// `[intake] max_in_flight` per replica, and the ceiling workers' concurrency.
    #[arg(long, default_value_t = 1000)]
    in_flight: usize,
    /// Closed loop: requests published and not yet `sent`, at most (default 2 × in-flight × replicas).
    #[arg(long)]
    window: Option<usize>,
    /// Skip the three ceilings.
    #[arg(long)]
    no_ceilings: bool,
    /// Measure the contract bus ceiling and notifyd in this many alternating pairs, and print the
    /// median share (instead of one ceiling run and one notifyd run)
    #[arg(long)]
    pairs: Option<usize>,
    /// Start the daemon with this many tracked messages outstanding (tracking entries waiting for
    /// their first poll), to price status tracking
    #[arg(long, default_value_t = 0)]
    tracked: usize,
    /// Measure only one ceiling (no daemon); `contract-as-notifyd` is the contract bus plus the NATS
    /// operation notifyd does beyond the contract (publishing the tracking entry), to price it.
    #[arg(long, value_parser = ["bare", "contract", "contract-as-notifyd", "http"])]
    only_ceiling: Option<String>,
    /// Measure notifyd in this many alternating pairs: nats-server with its default
    /// `sync_interval` (2 minutes), then with `--nats-sync` (default `always`); prints the
    /// throughput of each pair and the median ratio (with `--rate`, open loop: compare the latencies)
    #[arg(long)]
    sync_pairs: Option<usize>,
    /// JetStream `sync_interval` of the bench's nats-server: `always` (fsync every write) or a
    /// duration such as `10s`, `500ms`, `2m` (default: the server's, 2 minutes). Not applied by
    /// `classes`.
    #[arg(long, value_parser = parse_sync)]
    nats_sync: Option<String>,
    /// Run a matrix instead: `quick` (10k and 100k) or `full` (10k, 100k and 1M).
    #[arg(long, value_parser = ["quick", "full"])]
    suite: Option<String>,
    /// Ceilings in a suite use at most this many requests.
    #[arg(long, default_value_t = 200_000)]
    ceiling_cap: usize,
    /// Give up after this many seconds without any event.
    #[arg(long, default_value_t = 30)]
    stall_secs: u64,
    /// Build the daemon and plugin first (`cargo build --release -p notifyd -p notifyd-smsc`);
    /// they are built anyway when missing.
    #[arg(long, global = true)]
    build: bool,
    /// The daemon binary (default `target/release/notifyd`).
    #[arg(long, global = true)]
    notifyd: Option<PathBuf>,
    /// The SMSC plugin (default `target/release/libnotifyd_smsc.so`).
    #[arg(long, global = true)]
    plugin: Option<PathBuf>,
    /// Record the (first) daemon with `perf record --call-graph dwarf` into this file.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Run the daemon under this command, e.g. "valgrind --tool=dhat --dhat-out-file=/tmp/dhat.out".
    #[arg(long)]
    wrapper: Option<String>,
    /// NOTIFYD_LOG for the daemon.
    #[arg(long, default_value = "warn", global = true)]
    log: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliMode {
    Jetstream,
    Core,
}

#[derive(Subcommand)]
enum Cmd {
    /// The traffic-class scenarios (issue 11): figures F1-F5 against their targets. Sizes default
    /// to the issue's; `--in-flight` (before `classes`) is the daemon's `max_in_flight`.
    Classes(ClassesArgs),
    /// (internal) a ceiling worker process.
    #[command(hide = true)]
    Worker {
        kind: String,
        #[arg(long, default_value = "")]
        nats: String,
        #[arg(long, default_value = "")]
        url: String,
        #[arg(long, default_value_t = 0)]
        n: usize,
        #[arg(long, default_value_t = 1000)]
        in_flight: usize,
        #[arg(long)]
        as_notifyd: bool,
    },
}

/// `notifyd-bench classes`: see [`notifyd_bench::classes`].
#[derive(clap::Args)]
struct ClassesArgs {
    /// Figures to measure, in order (repeat or comma-separate): f1, f2, f3, f4, f5.
    #[arg(long, value_delimiter = ',', value_parser = parse_figure)]
    figure: Vec<Figure>,
    /// Every figure, F1 to F5.
    #[arg(long)]
    all: bool,
    /// `rate_per_second` of the limited provider.
    #[arg(long, default_value_t = Params::default().provider_rate)]
    provider_rate: f64,
    /// `burst` of the limited provider.
    #[arg(long, default_value_t = Params::default().burst)]
    burst: u32,
    /// Bulk requests queued for the limited provider (F1, F2, F4; the big tenant's in F3).
    #[arg(long, default_value_t = Params::default().backlog)]
    backlog: usize,
    /// Urgent (F1) and unlimited-provider (F2) requests per second.
    #[arg(long, default_value_t = Params::default().arrival_rate)]
    arrival_rate: f64,
    /// How long they arrive, seconds (F1's measuring window).
    #[arg(long, default_value_t = Params::default().arrival_secs)]
    arrival_secs: f64,
    /// How long to wait for `sent` events after the last request is published, seconds.
    #[arg(long, default_value_t = Params::default().drain_secs)]
    drain_secs: f64,
    /// The small tenant's bulk requests (F3).
    #[arg(long, default_value_t = Params::default().small)]
    small: usize,
    /// F4: seconds the two replicas drain after the backlog is published.
    #[arg(long, default_value_t = Params::default().f4_secs)]
    f4_secs: f64,
    /// F4: the window calls are counted in, seconds.
    #[arg(long, default_value_t = Params::default().f4_window_secs)]
    f4_window_secs: f64,
    /// F5: queued counts at which the daemon's RSS is read (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = Params::default().f5_levels)]
    f5_levels: Vec<usize>,
    /// F5: also read RSS with 1M queued (about 2 minutes more).
    #[arg(long)]
    f5_1m: bool,
    /// F5: seconds to wait at least after publishing a level before RSS is read.
    #[arg(long, default_value_t = Params::default().f5_settle_secs)]
    f5_settle_secs: f64,
    /// How requests state their class: `subject` (`notify.sms.send.<class>`), `field`
    /// (`"priority"`), `none`, or `auto` (`subject` when a stream captures
    /// `notify.sms.send.urgent`, else `none`).
    #[arg(long, value_parser = ["auto", "subject", "field", "none"], default_value = "auto")]
    class_via: String,
    /// Publish acks awaited at once while queueing a backlog.
    #[arg(long, default_value_t = Params::default().ack_window)]
    ack_window: usize,
}

/// `always`, or a whole number with a unit nats-server takes (`ms`, `s`, `m`, `h`).
fn parse_sync(s: &str) -> Result<String, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let is_duration = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["ms", "s", "m", "h"].contains(&unit);
    if s == "always" || is_duration {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is neither `always` nor a duration such as 10s, 500ms, 2m"))
    }
}

fn parse_figure(s: &str) -> Result<Figure, String> {
    Figure::parse(s).ok_or_else(|| format!("{s:?} is not one of f1, f2, f3, f4, f5"))
}

impl ClassesArgs {
    fn figures(&self) -> Vec<Figure> {
        if self.all { Figure::ALL.to_vec() } else { self.figure.clone() }
    }

    fn params(&self) -> Params {
        let mut f5_levels = self.f5_levels.clone();
        if self.f5_1m {
            f5_levels.push(1_000_000);
        }
        Params {
            provider_rate: self.provider_rate,
            burst: self.burst,
            backlog: self.backlog,
            arrival_rate: self.arrival_rate,
            arrival_secs: self.arrival_secs,
            drain_secs: self.drain_secs,
            small: self.small,
            f4_secs: self.f4_secs,
            f4_window_secs: self.f4_window_secs,
            f5_levels,
            f5_settle_secs: self.f5_settle_secs,
            class_via: ClassVia::parse(&self.class_via).unwrap_or(ClassVia::Auto),
            ack_window: self.ack_window,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Some(Cmd::Worker { kind, nats, url, n, in_flight, as_notifyd }) = &cli.command {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let result = rt.block_on(async {
            match Kind::parse(kind) {
                Some(Kind::Bare) => ceilings::bare(nats, *in_flight).await,
                Some(Kind::Contract) => ceilings::contract(nats, *in_flight, *as_notifyd).await,
                Some(Kind::Http) => ceilings::http(url, *n, *in_flight).await,
                None => Err(format!("unknown worker {kind}")),
            }
        });
        if let Err(e) = result {
            eprintln!("worker {kind}: {e}");
            std::process::exit(1);
        }
        return;
    }

    let (notifyd, plugin) = match (&cli.notifyd, &cli.plugin) {
        (Some(d), Some(p)) => (d.clone(), p.clone()),
        _ => match notifyd_bench::binaries(true, cli.build) {
            Ok((d, p)) => (cli.notifyd.clone().unwrap_or(d), cli.plugin.clone().unwrap_or(p)),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
    };
    let opts = Options {
        notifyd,
        plugin,
        self_exe: std::env::current_exe().expect("this program's path"),
        in_flight: cli.in_flight,
        window: cli.window,
        stall: Duration::from_secs(cli.stall_secs),
        wrapper: cli
            .wrapper
            .as_deref()
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        perf: cli.perf.clone(),
        log_filter: cli.log.clone(),
        nats_sync: match (&cli.nats_sync, cli.sync_pairs) {
            (None, Some(_)) => Some("always".into()),
            (sync, _) => sync.clone(),
        },
    };
    println!("machine: {}", notifyd_bench::procs::machine());
    println!(
        "daemon: {} with {}, max_in_flight {}",
        opts.notifyd.display(),
        opts.plugin.display(),
        opts.in_flight
    );
    // The load generator gets the runtime; the mock runs on a thread of its own.
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if let Some(Cmd::Classes(args)) = &cli.command {
        let figures = args.figures();
        if figures.is_empty() {
            eprintln!("classes: name figures with --figure f1,f2,... or use --all");
            std::process::exit(2);
        }
        let params = args.params();
        println!("classes: {}", classes::describe(&params));
        let report = rt.block_on(classes::run(&opts, &params, &figures));
        println!();
        print!("{}", report.table());
        for note in &report.notes {
            println!("note: {note}");
        }
        std::process::exit(if !report.errors.is_empty() {
            2
        } else if report.all_pass() {
            0
        } else {
            1
        });
    }
    let all = rt.block_on(async {
        if let Some(suite) = &cli.suite {
            let sizes: &[usize] =
                if suite == "full" { &[10_000, 100_000, 1_000_000] } else { &[10_000, 100_000] };
            notifyd_bench::suite(&opts, sizes, cli.ceiling_cap).await
        } else if cli.only_ceiling.as_deref() == Some("contract-as-notifyd") {
            notifyd_bench::single(&opts, Target::ContractAsNotifyd, cli.n, cli.rate, false).await
        } else if let Some(kind) = cli.only_ceiling.as_deref().and_then(Kind::parse) {
            notifyd_bench::single(&opts, Target::Ceiling(kind), cli.n, cli.rate, false).await
        } else {
            let mode = match cli.mode {
                CliMode::Jetstream => Mode::Jetstream,
                CliMode::Core => Mode::Core,
            };
            let target = Target::Notifyd { mode, replicas: cli.replicas.max(1), tracked: cli.tracked };
            match (cli.pairs, cli.sync_pairs) {
                (_, Some(rounds)) => notifyd_bench::sync_paired(&opts, target, cli.n, cli.rate, rounds).await,
                (Some(rounds), None) => notifyd_bench::paired(&opts, target, cli.n, rounds).await,
                (None, None) => notifyd_bench::single(&opts, target, cli.n, cli.rate, !cli.no_ceilings).await,
            }
        }
    });
    if all.iter().any(|m| !m.complete()) {
        std::process::exit(2);
    }
}
