//! notifyd's benchmark harness. In one run on one machine it starts a nats-server (JetStream,
//! temporary store), a fast mock of SMSC's send endpoint, the release daemon with the real `smsc`
//! plugin, and a load generator that publishes N requests and waits for their `sent` events; it
//! reports throughput, publish → `sent` latency, the daemon's peak RSS and CPU per 10k requests, and,
//! in the same run, three ceilings notifyd is measured against (bare bus, contract bus, HTTP; see
//! [`ceilings`]). The `classes` subcommand runs the traffic-class scenarios instead ([`classes`]).
//! `docs/benchmarks.md` has the commands and the figures.
#![forbid(unsafe_code)]

pub mod ceilings;
pub mod classes;
pub mod daemon;
pub mod load;
pub mod mock;
pub mod procs;
pub mod run;

use ceilings::Kind;
use daemon::Mode;
use run::{Measurement, Options, Target, describe, measure};
use std::path::PathBuf;

/// `target/release/notifyd` and `target/release/libnotifyd_smsc.so` (or the debug ones), built
/// with `cargo build -p notifyd -p notifyd-smsc` when `build` is set or either is missing.
pub fn binaries(release: bool, build: bool) -> Result<(PathBuf, PathBuf), String> {
    let profile = if release { "release" } else { "debug" };
    let dir = notifyd_testkit::target_dir().join(profile);
    let (notifyd, plugin) = (dir.join("notifyd"), dir.join("libnotifyd_smsc.so"));
    if build || !notifyd.is_file() || !plugin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = std::process::Command::new(&cargo);
        cmd.args(["build", "--quiet", "-p", "notifyd", "-p", "notifyd-smsc"])
            .current_dir(notifyd_testkit::workspace_root());
        if release {
            cmd.arg("--release");
        }
        let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build -p notifyd -p notifyd-smsc failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok((notifyd, plugin))
}

/// Measures and prints as it goes; a failed measurement is reported and skipped.
async fn step(
    opts: &Options,
    target: Target,
    n: usize,
    rate: Option<f64>,
    all: &mut Vec<Measurement>,
) -> Option<Measurement> {
    eprintln!("... {} n={n}{}", target.label(), rate.map_or(String::new(), |r| format!(" at {r:.0}/s")));
    match measure(opts, target, n, rate).await {
        Ok(m) => {
            println!("{}", describe(&m));
            all.push(m.clone());
            Some(m)
        }
        Err(e) => {
            println!("{:<26} n={n}: FAILED: {e}", target.label());
            None
        }
    }
}

/// The ceilings (at `n`), for the ratios.
pub struct Ceilings {
    pub bare: Option<Measurement>,
    pub contract: Option<Measurement>,
    pub http: Option<Measurement>,
}

/// The three ceilings, and the contract bus with the NATS operations notifyd does beyond it (which prices
/// them: it is not a ceiling, the ratios do not use it).
pub async fn ceilings(opts: &Options, n: usize, all: &mut Vec<Measurement>) -> Ceilings {
    let c = Ceilings {
        bare: step(opts, Target::Ceiling(Kind::Bare), n, None, all).await,
        contract: step(opts, Target::Ceiling(Kind::Contract), n, None, all).await,
        http: step(opts, Target::Ceiling(Kind::Http), n, None, all).await,
    };
    step(opts, Target::ContractAsNotifyd, n, None, all).await;
    c
}

/// notifyd's throughput as a share of the contract bus and HTTP ceilings.
pub fn ratios(m: &Measurement, c: &Ceilings) -> String {
    let share = |ceiling: &Option<Measurement>| match ceiling {
        Some(x) if x.throughput > 0.0 => format!("{:.0}%", 100.0 * m.throughput / x.throughput),
        _ => "n/a".into(),
    };
    format!(
        "{} n={}: {:.0} msg/s = {} of the contract bus ceiling, {} of the HTTP ceiling, {} of the bare bus ceiling",
        m.target.label(),
        m.n,
        m.throughput,
        share(&c.contract),
        share(&c.http),
        share(&c.bare)
    )
}

/// One target (with the ceilings unless `with_ceilings` is off); returns every measurement.
pub async fn single(
    opts: &Options,
    target: Target,
    n: usize,
    rate: Option<f64>,
    with_ceilings: bool,
) -> Vec<Measurement> {
    let mut all = Vec::new();
    let c = if with_ceilings { Some(ceilings(opts, n, &mut all).await) } else { None };
    let m = step(opts, target, n, rate, &mut all).await;
    println!();
    println!("{}", run::table(&all));
    if let (Some(m), Some(c)) = (&m, &c) {
        println!("{}", ratios(m, c));
    }
    all
}

/// `rounds` pairs of (contract bus ceiling, `target`), one after the other, so that both sides of
/// each ratio see the same machine: on a shared VM whose speed drifts by tens of percent within
/// minutes, the median of these ratios is steadier than one ceiling and one run apart.
pub async fn paired(opts: &Options, target: Target, n: usize, rounds: usize) -> Vec<Measurement> {
    let mut all = Vec::new();
    let mut shares = Vec::new();
    for _ in 0..rounds.max(1) {
        let contract = step(opts, Target::Ceiling(Kind::Contract), n, None, &mut all).await;
        let m = step(opts, target, n, None, &mut all).await;
        if let (Some(c), Some(m)) = (contract, m) {
            if c.throughput > 0.0 {
                shares.push(m.throughput / c.throughput);
            }
        }
    }
    println!();
    println!("{}", run::table(&all));
    let listed: Vec<String> = shares.iter().map(|s| format!("{:.0}%", 100.0 * s)).collect();
    shares.sort_by(f64::total_cmp);
    if let Some(median) = shares.get(shares.len() / 2) {
        println!(
            "{} n={n}: share of the contract bus ceiling per pair {}; median {:.0}%",
            target.label(),
            listed.join(", "),
            100.0 * median
        );
    }
    all
}

/// `rounds` pairs of `target` on a nats-server with its default `sync_interval` (2 minutes) and on
/// one with `opts.nats_sync` (e.g. `always`), alternately, so that both sides of each ratio see the
/// same machine; prints the throughput of each pair, the ratio (sync / default) and its median.
/// With a `rate` (open loop) the table's latencies are the figures to compare.
pub async fn sync_paired(
    opts: &Options,
    target: Target,
    n: usize,
    rate: Option<f64>,
    rounds: usize,
) -> Vec<Measurement> {
    let sync = opts.nats_sync.clone().unwrap_or_else(|| run::DEFAULT_SYNC.into());
    let default = Options { nats_sync: None, ..opts.clone() };
    let mut all = Vec::new();
    let mut pairs = Vec::new();
    for _ in 0..rounds.max(1) {
        let base = step(&default, target, n, rate, &mut all).await;
        let synced = step(opts, target, n, rate, &mut all).await;
        if let (Some(b), Some(s)) = (base, synced) {
            pairs.push((b, s));
        }
    }
    println!();
    println!("{}", run::table(&all));
    // Two figures per run: up to the last `sent` seen, and up to when the store had settled.
    let seen: Vec<(f64, f64)> = pairs.iter().map(|(b, s)| (b.throughput, s.throughput)).collect();
    let settled: Vec<(f64, f64)> =
        pairs.iter().map(|(b, s)| (b.settled_throughput(), s.settled_throughput())).collect();
    for (what, figures) in [("last `sent` seen", seen), ("settled", settled)] {
        println!(
            "{} n={n}, msg/s to {what}, sync_interval {} / {sync}, per pair: {}",
            target.label(),
            run::DEFAULT_SYNC,
            ratio_list(&figures)
        );
    }
    all
}

/// `a → b: b/a` for each pair (the second figure as a share of the first), and the median ratio.
fn ratio_list(pairs: &[(f64, f64)]) -> String {
    let mut ratios = Vec::new();
    let mut listed = Vec::new();
    for &(a, b) in pairs {
        if a > 0.0 && b > 0.0 {
            ratios.push(b / a);
            listed.push(format!("{a:.0} → {b:.0}: {:.2}", b / a));
        } else {
            listed.push(format!("{a:.0} → {b:.0}: n/a"));
        }
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios.get(ratios.len() / 2).map_or("n/a".into(), |m| format!("{m:.2}"));
    format!("{}; median ratio {median}", listed.join(", "))
}

/// The matrix: for each size, the three ceilings (at most `ceiling_cap` requests), then notifyd
/// with JetStream intake and one replica, two replicas, and core intake; at the end an open-loop
/// run of one JetStream replica at half the largest measured rate (for the p99 target).
pub async fn suite(opts: &Options, sizes: &[usize], ceiling_cap: usize) -> Vec<Measurement> {
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    let mut summary = Vec::new();
    let mut max_rate: f64 = 0.0;
    for &n in sizes {
        let c = ceilings(opts, n.min(ceiling_cap), &mut all).await;
        for target in [
            Target::Notifyd { mode: Mode::Jetstream, replicas: 1, tracked: 0 },
            Target::Notifyd { mode: Mode::Jetstream, replicas: 2, tracked: 0 },
            Target::Notifyd { mode: Mode::Core, replicas: 1, tracked: 0 },
            // The same load with 100k tracked messages outstanding (waiting for their first poll).
            Target::Notifyd { mode: Mode::Jetstream, replicas: 1, tracked: 100_000 },
        ] {
            if let Some(m) = step(opts, target, n, None, &mut all).await {
                if target == (Target::Notifyd { mode: Mode::Jetstream, replicas: 1, tracked: 0 })
                    && n <= 100_000
                {
                    max_rate = max_rate.max(m.throughput);
                }
                summary.push(ratios(&m, &c));
            }
        }
    }
    if max_rate > 0.0 {
        let rate = (max_rate / 2.0).floor();
        let n = ((rate * 30.0) as usize).clamp(10_000, 200_000);
        step(
            opts,
            Target::Notifyd { mode: Mode::Jetstream, replicas: 1, tracked: 0 },
            n,
            Some(rate),
            &mut all,
        )
        .await;
    }
    println!();
    println!("{}", run::table(&all));
    for s in summary {
        println!("{s}");
    }
    println!("suite took {:.0} s", started.elapsed().as_secs_f64());
    all
}
